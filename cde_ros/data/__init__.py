"""Recordings and pairing: rosbag2 reading and writing, the snapshot buffer, manipulation events and\nthe pairing of events with their before and after frames (shared by the node and the trainer)."""
