"""udpnet programs (run as scripts; importable for tests)."""
