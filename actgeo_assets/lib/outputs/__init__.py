"""What a person reads: report, explorer, figures, SQL tables, results for Python, export."""
