"""Test helpers: an emulator of how ds4-server writes, touches and removes snapshots."""
