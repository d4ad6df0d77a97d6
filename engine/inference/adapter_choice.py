"""Which adapter the loaded model uses for a patient: theirs, else the domain's, else none.

The patient's active version (the newest, or the one a rollback chose) is stacked on the
domain adapter it was trained over. A damaged or mismatched adapter never leaves the
previous patient's adapter active: the model falls back and the label says why.
"""

from __future__ import annotations

from typing import Any

from engine.errors import PhyAssistError
from engine.model.adapters import AdapterRegistry, domain_adapter_path, read_adapter_dir
from engine.records import Patient


class AdapterChoice:
    """Adapter switching of :class:`~engine.inference.assistant.Assistant` (a base of it;
    the Assistant provides ``settings``, ``adapters``, ``model_label`` and the ``_loaded``,
    ``_adapters``, ``_suffix``, ``_domain_name`` and ``last_adapter_error`` state)."""

    def _active_version(
        self, registry: AdapterRegistry, patient: Patient
    ) -> tuple[int | None, str]:
        """The patient's active adapter version, or None and what the label says instead
        (``last_adapter_error`` gets the detail). Both backends choose through this."""
        try:
            return registry.active(patient.id), ""
        except PhyAssistError as exc:
            self.last_adapter_error = str(exc)
            return None, "adapters unreadable"

    def use_patient(self, patient: Patient | None, store: Any | None = None) -> str:
        """Activate the patient's adapter (the newest, or the one a rollback chose), else the
        domain adapter, else the base.

        A damaged or mismatched adapter never leaves the previous patient's adapter active:
        it falls back and says so in the label (and ``last_adapter_error``).
        """
        if self._loaded is None:
            return self.model_label
        manager = self.adapters
        self.last_adapter_error = None
        problem = ""
        with manager.lock:
            if patient is not None and store is not None:
                registry = AdapterRegistry(store)
                version, problem = self._active_version(registry, patient)
                if version is not None:
                    try:
                        self._suffix = self._activate_patient_adapter(registry, patient, version)
                        return self.model_label
                    except PhyAssistError as exc:
                        problem = f"adapter v{version} unusable"
                        self.last_adapter_error = f"Adapter v{version}: {exc}"
            if self._activate_domain():
                self._suffix = "domain adapter"
            else:
                manager.activate(None)
                self._suffix = "base"
            if problem:
                self._suffix += f" ({problem})"
        return self.model_label

    def _activate_patient_adapter(self, registry: AdapterRegistry, patient: Patient, v: int) -> str:
        """Load and activate patient adapter ``v``; returns the label suffix (learning).

        An adapter trained over the domain adapter (its card says which) is stacked on it:
        domain + patient deltas together. If that domain adapter is not the one available,
        raises AdapterLoadError (the caller falls back to the domain adapter and says why).
        An adapter trained on the bare base (older cards) is used alone, as before."""
        from engine.model.stack import stack_base

        manager = self.adapters
        name = f"patient-{patient.id[:16]}-v{v}"
        stack: list[str] = []
        path = stack_base(registry.card(patient.id, v), self.settings.model)
        if path is not None:
            if not manager.is_loaded("domain"):
                config, state = read_adapter_dir(path)
                manager.load("domain", config, state)
            stack.append("domain")
        if not manager.is_loaded(name):
            config, state = registry.read(patient.id, v)
            manager.load(name, config, state)
        manager.activate_stack([*stack, name])
        return f"domain + adapter v{v}" if stack else f"adapter v{v}"

    def _activate_domain(self) -> bool:
        try:
            path = domain_adapter_path(self.settings.model)
        except PhyAssistError as exc:
            self.last_adapter_error = str(exc)
            return False
        if path is None:
            return False
        name = "domain"
        manager = self.adapters
        try:
            if not manager.is_loaded(name):
                config, state = read_adapter_dir(path)
                manager.load(name, config, state)
            manager.activate(name)
        except PhyAssistError as exc:
            self.last_adapter_error = f"Domain adapter: {exc}"
            return False
        self._domain_name = name
        return True

    @property
    def active_adapter(self) -> str | None:
        return self._adapters.active if self._adapters is not None else None
