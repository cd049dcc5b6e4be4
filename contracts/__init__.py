"""What the API and the workers agree on: settings, task and queue names, the embedded broker."""
