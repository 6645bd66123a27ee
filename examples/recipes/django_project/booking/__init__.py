"""The recipe's one app: seats, a correct booking view and a check-then-act one."""
