"""Images and where they come from: decoding, checked indexes, sources, seeded splits, duplicates,
the planted-bias generator and the downloader."""
