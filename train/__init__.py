"""Training side: prepare (faces -> dataset) and the LoRA training recipe. Depends only on `headshots`."""
