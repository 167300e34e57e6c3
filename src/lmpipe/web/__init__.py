"""Web ingestion: WARC / WET / HTML records to main text, with URL filtering (see ``reader``)."""
