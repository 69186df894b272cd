"""``selfheal demo``: heal a simulated HMS platform end to end (see ``runner``)."""
