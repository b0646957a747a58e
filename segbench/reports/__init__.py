"""Result files, tables and (later) reports and comparisons."""
