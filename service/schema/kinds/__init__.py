"""One decoder/packer per BTF kind; :mod:`ringbridge.schema.compiler` registers them."""
