"""Built-in datasets: UTKFace folders, synthetic faces, image folder plus CSV."""
