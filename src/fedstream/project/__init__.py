"""``fedstream new``: the files of a new federated project, ready for ``fedstream run``."""

from fedstream.project.template import check_project_name, project_files, write_project

__all__ = ["check_project_name", "project_files", "write_project"]
