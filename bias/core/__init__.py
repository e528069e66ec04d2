"""Shared tools with no knowledge of images or models: registry, packed strings, atomic I/O, parallel map,
process groups, seeding, errors and progress bars."""
