"""End-to-end encryption support: key distribution, cross-signing, to-device messages,
device list tracking and key backups. The server only stores and relays public keys and
ciphertext; it never sees a private key or a plaintext."""
