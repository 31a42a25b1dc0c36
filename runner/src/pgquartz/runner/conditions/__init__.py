"""Pure decisions on results: ``when`` rules (Go-template and Jinja2) and check expectations."""
