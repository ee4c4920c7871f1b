{#
    Use a model's custom schema as is (`silver`, `gold`, ...) instead of dbt's default
    `<target schema>_<custom schema>`, so other readers of the warehouse see stable names such
    as `silver.fct_transactions`. Models without a custom schema go to the target schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
