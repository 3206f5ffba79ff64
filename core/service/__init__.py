"""The service's shared logic: configuration, the database and its tables, auth, the catalog,
the artifact store, the broker, the job life and the sandbox. Used by the API and the workers;
never imports them."""
