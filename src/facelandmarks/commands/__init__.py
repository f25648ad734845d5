"""Commands of the ``facelandmarks`` CLI that live in their own modules (registered by ``facelandmarks.cli``)."""
