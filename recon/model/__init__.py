"""The model: density fields and their encodings, the renderer (the forward model), the losses."""
