"""Face detection: batched MTCNN and matching of detections to annotated faces."""
