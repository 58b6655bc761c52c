"""The Streamlit UI of the stack: pages in ``app_pages``, service clients in ``clients``."""
