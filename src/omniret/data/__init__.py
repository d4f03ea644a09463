"""Data: benchmark formats (M-BEIR, MMEB, BEIR), folder/JSONL corpora and offline data-set builders."""
