"""Model files: mal safetensors (+ architecture), torch.export .pt2, plain state dicts."""
