"""Reading and writing what a user keeps: detector checkpoints, tables (CSV, Parquet, NumPy)
and their preprocessing, and the model card."""
