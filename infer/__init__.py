"""Inference side: styles -> prompts, sampling, face-similarity filter, gallery. Depends only on
`headshots`; reads the trainer's outputs from disk, never imports `train`."""
