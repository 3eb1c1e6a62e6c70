"""felidctl: the operator CLI, calicoctl's verbs over felid's datastore."""
