"""Running models over many images: weight resolution and loading, the batched runner of every
precomputed transform, and the content-addressed store of its outputs (images, text, tables,
vectors)."""
