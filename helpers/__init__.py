"""Tested helpers behind the course notebooks: one module per topic, each mirrored by tests/test_<module>.py."""
