"""Admission: whether a request is taken at all (shedding, drain), who sent it (auth), and whether its body is sound."""
