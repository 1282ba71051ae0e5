"""A tiny Django 3.2 site for bench/run.sh: one template page with a 100-row loop (/rows)."""
