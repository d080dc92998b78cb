"""Data curation: sources → language, license, quality filters → the dataset/ artifact."""
