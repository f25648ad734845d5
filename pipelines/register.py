"""DVC stage ``register``: the finetuned model into the MLflow registry; ``@champion`` only to a better model
(see facelandmarks.registry.stage)."""

from facelandmarks.registry.stage import main

if __name__ == "__main__":
    main()
