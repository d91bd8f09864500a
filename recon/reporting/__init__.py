"""What users read: report.html, renders, figures, summary lines, tables, progress display."""
