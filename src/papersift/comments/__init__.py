"""Comments under papers: threads of one level, safe Markdown, own edits, admins' hiding."""
