"""Reading picture files: finding and hashing them, decoding safely (RAW too), their facts, text inside them."""
