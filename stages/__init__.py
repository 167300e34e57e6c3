"""What DVC calls: ``python -m stages <stage> <library entry> name=path ...`` (one generic entry point).

``registry.py`` declares every stage once and generates ``dvc.yaml``; ``lmpipe.contract`` runs the entry.
"""
