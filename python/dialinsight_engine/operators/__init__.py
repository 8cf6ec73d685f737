"""Evolution operators: the interface (`base`), the shipped ones (`evol`) and the rules that
eliminate failed rewrites (`elimination`)."""
