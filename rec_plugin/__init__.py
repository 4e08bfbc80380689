"""sparkrec's feature-engineering library: the Criteo schema, feature ops and Workflows."""
