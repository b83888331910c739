"""The layers of AccessRequestWorkflow (workflows/access_request.py), each a class the next one
extends: record (state and events) < delivery (audit and notifications) < deciding < hook_steps <
asking < granting < the workflow, which keeps the story. A layer calls only the layers below it.
calls.py types the activity calls."""
