"""Models run on this machine from the Hugging Face hub: fetch (can the model be had before
loading it) and loading (device, dtype, why it did not load), shared by captioners and embedders."""
