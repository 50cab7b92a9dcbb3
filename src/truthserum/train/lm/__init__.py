"""Language models: the byte transformer ensemble and Hugging Face fine-tuning."""
