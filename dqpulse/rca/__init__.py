"""Root cause: lineage between datasets and field/segment attribution of incidents."""
