"""Wire protocols: each decodes a request into calls for the dispatcher and encodes the answers."""
