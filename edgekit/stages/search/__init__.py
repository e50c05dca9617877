"""Accuracy-aware int8: the search for an int8 that meets an accuracy budget (edgekit.stages.search.search)."""

from edgekit.stages.search.options import (
    BudgetData,
    Builder,
    SearchInputs,
    SearchOptions,
    SearchResult,
    search_options,
)
from edgekit.stages.search.search import accuracy_aware_int8, quantize_with_budget
from edgekit.stages.search.table import print_search

__all__ = ["BudgetData", "Builder", "SearchInputs", "SearchOptions", "SearchResult", "accuracy_aware_int8",
           "print_search", "quantize_with_budget", "search_options"]
