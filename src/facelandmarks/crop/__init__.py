"""Square face crops: geometry, settings, the shared face finder, and the ``crop`` stage."""
