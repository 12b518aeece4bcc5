"""The interactive compare view: one prompt, one column per model (``mergechat compare``)."""
