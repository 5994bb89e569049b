"""Image-text matching and cross-modal retrieval: dual encoder, InfoNCE, Recall@K, index, search."""
