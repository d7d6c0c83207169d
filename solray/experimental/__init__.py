"""`solray.experimental`: Ray's experimental APIs that solray has."""
