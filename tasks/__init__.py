"""Built-in task plugins: reusable task kinds and the UTKFace tasks."""
