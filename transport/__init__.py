"""The wire between the camera pipeline and the matching service, with no project imports of its own.

* :mod:`transport.schema`: the feature contract (one Kafka message per person observation), the
  single source of truth for producer and consumer validation.
* :mod:`transport.kafka_io`: Kafka client settings (bootstrap, SASL/TLS, compression) from a config node.
* :mod:`transport.message_auth`: per-camera HMAC-SHA256 record headers (signer and verifier).

``stream/`` (the publisher) and ``reid/`` (the matching service) both import this package; it imports
neither, nor anything else of the project, so the two sides share the contract without a cycle
(docs/architecture.md). The old paths ``stream.schema``, ``stream.kafka_io`` and ``stream.message_auth``
still work (re-exports) for existing callers and documented commands.
"""
