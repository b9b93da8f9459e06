"""Dataset releases: build the Parquet + card folder, compute statistics, push to the Hub."""
