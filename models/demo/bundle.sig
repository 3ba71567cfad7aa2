{
  "format": "privreid-bundle-signature",
  "version": 1,
  "algorithm": "Ed25519",
  "key_id": "3af5e5f71a680332",
  "public_key": "3oy3IulLNdH+ENGHnF4uEE8o1RfxsOMz/lD/YG3j1lI=",
  "manifest_sha256": "228a58629cf8c3c14b4b40efb230b0c7cd2cba70dc493eb462b5fd0b19cbdc53",
  "signature": "r8e8bxseTyzcMvTZr0oYKUQDcSsbkvbWc3ABBiNjQT6Z7iYbjLTanu4t0tAdN0M7VGB6fomfSjYCjCooGbysCw=="
}
