{
  "format": "privreid-bundle-signature",
  "version": 1,
  "algorithm": "Ed25519",
  "key_id": "f03ff6c159964540",
  "public_key": "cD5AgQb5uFaFIifzx+8fn8nSm+7r1SVMN9xQC0LlC7w=",
  "manifest_sha256": "87810f62ad8a71ccdb62266126c4010161a2adbeb8e4a320bb575f9e02053760",
  "signature": "w7JQPjXaXAyFMAq+9rT1PWij4eouP/S+U9IDhbsGxiBDsi9fN5jTQqYxJhPGsikLfYmeO0h5L81ZWxX3xpjpDw=="
}
