"""The MLflow model registry: log a checkpoint as a registered model, and the champion decision."""
